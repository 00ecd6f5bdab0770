"""The AN2DL Mars-terrain challenge in numbers: its classes and image size, the defaults of every
command. Library functions take sizes as arguments; only defaults come from here."""

CLASS_NAMES = ("background", "soil", "bedrock", "sand", "big rock")
N_CLASSES = len(CLASS_NAMES)
IMAGE_SHAPE = (64, 128)
SHAPE_TEXT = f"{IMAGE_SHAPE[0]}x{IMAGE_SHAPE[1]}"
