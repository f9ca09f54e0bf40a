"""The SkyLLH cluster conformance kit (a pytest plugin); see plugin.py."""
