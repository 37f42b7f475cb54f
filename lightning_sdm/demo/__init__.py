"""The CPU demo: its synthesised captioned clips (`audio`) and the run that trains the demo
codec and LM on them and measures what came out (`run`)."""
