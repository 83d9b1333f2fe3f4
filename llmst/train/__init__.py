"""Students: train on labeled records (`train`), relabel corpora (`predict_file`)."""

from llmst.train.config import TrainConfig
from llmst.train.predict import evaluate_student, predict_file
from llmst.train.trainer import TrainSummary, train

__all__ = ["TrainConfig", "TrainSummary", "evaluate_student", "predict_file", "train"]
