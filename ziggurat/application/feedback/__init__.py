"""Feedback on answers (thumbs, ratings, comments, corrections), its review, and fine-tuning export."""
