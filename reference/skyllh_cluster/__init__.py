"""skyllh_cluster: the SkyLLH cluster protocol, written down and made safe."""
# Interim: the public re-exports land together with the codec.
__version__ = "0.1.0"
