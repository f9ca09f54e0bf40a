"""The sans-I/O core (interim: the re-exports land together with the codec)."""
