"""The synthetic Mars data set, generated deterministically; nothing on the inference path imports it."""
