"""The bundled lm-evaluation-harness task `largeforge_facts` (offline: its data ships here)."""
