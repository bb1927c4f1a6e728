"""The model catalog: which served models a principal may see and use, with registry metadata."""
