"""Transport: pooled HTTP/1.1 to the upstreams, below the adapters."""
