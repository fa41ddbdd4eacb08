"""Data, models and offline evaluation of the music recommender."""
