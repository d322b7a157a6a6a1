"""Contract values shared by training, export and the runtime.

These are facts of the model input contract, not tunables: tunables live in
``monitor.config`` with their defaults and bounds.
"""

SAMPLE_RATE = 16_000
"""Every model sees 16 kHz mono float32 in [-1, 1]."""

WINDOW_SAMPLES = 15_600
"""YAMNet's fixed input: 0.975 s at 16 kHz. Wav2Vec2 uses the same window so both vote on the same audio."""

WINDOW_SECONDS = WINDOW_SAMPLES / SAMPLE_RATE

VAD_FRAME_SAMPLES = 480
"""webrtcvad accepts 10, 20 or 30 ms frames; 30 ms at 16 kHz."""

LABELS = ("Crying", "Screaming", "Normal")
"""Output order of every classifier head, the manifest and the fused scores."""

ALERT_LABELS = ("Crying", "Screaming")
SCREAMING = "Screaming"
"""The alert label with an enter threshold of its own (``fusion.enter_threshold_screaming``)."""
ALERT_ON_LABEL = "label"
ALERT_ON_SUM = "sum"
"""``fusion.alert_on``: a window alerts by its likeliest label's probability, or by Crying + Screaming together."""

DATASET_LABELS = {"cry": "Crying", "scream": "Screaming", "normal": "Normal"}
"""Manifest label column -> product label."""

FEEDBACK_CSV = "feedback.csv"
"""In a user dataset folder: the clips `nursery-monitor feedback` filed there (written by ``monitor.feedback``,
read by ``training.data``, which pins them to the train split)."""

YAMNET_EMBEDDING_TENSOR = "yamnet_frames/global_average_pooling2d/Mean_Squeeze__273:0"
"""As documented for tf2onnx's conversion; tf2onnx 1.17 numbers it ``__272:0``, so the converter
(training/yamnet_features.py) also finds it by its place after the pooling layer."""
YAMNET_EMBEDDING_SIZE = 1024
YAMNET_AUDIOSET_CLASSES = 521

YAMNET_VOTER_CLASSES = {
    "Crying": (20, 19),  # "Baby cry, infant cry", "Crying, sobbing"
    "Screaming": (11,),  # "Screaming"
}
"""AudioSet rows that make YAMNet's own scores a third voter (and the Frigate-style baseline)."""
AUDIOSET_HEARS_ALERT = 0.1
"""From this score on one of those rows, YAMNet's own AudioSet scores count as hearing a cry or scream at all: the
label audit lists a cry clip none of whose windows reaches it, and the bench counts the missed insertions none of
whose windows did (no model of ours could be blamed alone for those)."""
YAMNET_VETO_CLASSES = {
    "laughter": (13, 14, 15, 16, 17, 18),  # Laughter, Baby laughter, Giggle, Snicker, Belly laugh, Chuckle
    "cat": (76, 77, 78, 79, 80),  # Cat, Purr, Meow, Hiss, Caterwaul
    "animal": tuple(range(81, 132)),  # farm animals and fowl ("Livestock..." to "Honk"), wild animals, birds, insects,
    # frogs, whales; not "Animal" itself nor the pets (68-75): AudioSet hears some cries as a dog
}
"""AudioSet rows whose evidence vetoes an alarm (``fusion.veto_laughter``, ``fusion.veto_cat``,
``fusion.veto_animal``): the sounds the heads most often take for a cry, which AudioSet knows from thousands of
recordings."""

MODEL_MANIFEST_SCHEMA = 1
EVENT_SCHEMA = 1

EPSILON = 1e-12
"""Guards log and division of silent signals."""
