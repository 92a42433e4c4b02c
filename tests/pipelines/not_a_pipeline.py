"""A module whose named attribute is not a pipeline."""

NOT_A_PIPELINE = {"steps": []}
