"""The conformance kit's pytest plugin (being written by the kit helper; empty until then)."""
