"""The demo model's tools: the corpus builder, the training script, and what the trained model can show."""
