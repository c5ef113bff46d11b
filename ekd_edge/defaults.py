"""Every default that more than one place needs, in one place (CLI, recipes, profiles, gates, runtime)."""

DEFAULT_CORPUS = "lo-help-en-de"       # the bundled corpus a command uses when none is named
MAX_NEW_TOKENS = 128                   # translation length limit (tokens) unless told otherwise
TRANSLATE_BATCH = 32                   # sentences per call of an engine when translating a list

PARITY_SENTENCES = 200                 # gate sentences: greedy ids compared with PyTorch's
PARITY_THRESHOLD = 0.99                # share of identical sentences an exact (fp32) export needs
QUALITY_SENTENCES = 200                # gate sentences: BLEU compared with the checkpoint's
MAX_BLEU_DROP = 0.3                    # the largest BLEU drop the quality gate accepts

DEMO_RUN_DIR = "runs/demo"             # where `ekd-edge demo` (and `make demo`) writes, and benchmarks read
