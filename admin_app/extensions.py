"""Flask extensions as module globals, bound to an app in `create_app`."""

from __future__ import annotations

from flask_migrate import Migrate
from flask_sqlalchemy import SQLAlchemy

from shared.migrate import MIGRATIONS_DIR
from shared.models import Base

# Flask-SQLAlchemy 3.1 accepts a DeclarativeBase subclass; it shares Base's metadata,
# so `db.session` works with the models in shared.models directly.
db = SQLAlchemy(model_class=Base)
migrate = Migrate(directory=str(MIGRATIONS_DIR))
