"""Evaluation: the embedding store, the FAISS index, protection rate over attacker users."""
from facecure.evaluation.embedding_store import EmbeddingStore
from facecure.evaluation.evaluator import AttackerOutcome, NearestNeighbourEvaluator
from facecure.evaluation.index import ApproximateL2Index, FlatL2Index, gpu_available
from facecure.evaluation.protection import ProtectionResult, measure_protection
from facecure.evaluation.stats import summarize

__all__ = ["ApproximateL2Index", "AttackerOutcome", "EmbeddingStore", "FlatL2Index", "NearestNeighbourEvaluator",
           "ProtectionResult", "gpu_available", "measure_protection", "summarize"]
