"""Prediction: members -> TTA -> fusion -> decoding -> cleanup, batch by batch, and the run manifest."""
