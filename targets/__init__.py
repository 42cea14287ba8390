"""Backend targets (one module each) and the board-side benchmark agent (``agent.py``)."""
