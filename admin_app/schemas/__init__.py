"""marshmallow schemas of the admin API, one module per resource.

`fields.py` holds the strict field types every resource uses; `common.py` the
error, deletion and pagination schemas. Load schemas validate bodies (unknown
fields raise); dump schemas shape responses and feed the OpenAPI document.
"""
