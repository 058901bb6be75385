"""What `GET /providers/{id}/health` returns."""

from __future__ import annotations

from marshmallow import Schema, fields

STATE_DOC = ("closed (serving), half_open (one probe allowed), open (passed over until its cooldown ends), "
             "or unknown (no proxy process has called the provider lately).")


class LatencySchema(Schema):
    """Time to the upstream's response headers over the window, successful attempts only."""

    p50 = fields.Float(allow_none=True, metadata={"description": "Nearest-rank median, ms."})
    p95 = fields.Float(allow_none=True, metadata={"description": "Nearest-rank 95th percentile, ms."})


class InstanceHealthSchema(Schema):
    """What one proxy process reported."""

    instance = fields.String(metadata={"description": "host:pid of the proxy process."})
    state = fields.String(metadata={"description": STATE_DOC})
    requests = fields.Integer()
    errors = fields.Integer()
    in_flight = fields.Integer()
    updated_at = fields.String()


class ProviderHealthSchema(Schema):
    """A provider's circuits and recent figures, merged over every proxy process that reported lately."""

    provider_id = fields.Integer()
    name = fields.String()
    state = fields.String(metadata={"description": "The worst of the processes' provider circuits: " + STATE_DOC})
    models = fields.Dict(keys=fields.String(), values=fields.String(),
                         metadata={"description": "Per model, the worst state of its provider+model circuit."})
    window_s = fields.Integer(metadata={"description": "How far back the figures reach."})
    requests = fields.Integer(metadata={"description": "Upstream attempts in the window."})
    errors = fields.Integer(metadata={"description": "Failed attempts (connection, timeout, 5xx, 429, broken "
                                                     "stream) in the window."})
    error_rate = fields.Float(allow_none=True, metadata={"description": "errors / requests, four places."})
    latency_ms = fields.Nested(LatencySchema)
    in_flight = fields.Integer()
    last_error = fields.String(allow_none=True)
    last_error_at = fields.String(allow_none=True)
    instances = fields.List(fields.Nested(InstanceHealthSchema))
