"""`python -m llmst` (and `torchrun ... -m llmst train ...`) runs the command line."""

from llmst.cli import main

main()
