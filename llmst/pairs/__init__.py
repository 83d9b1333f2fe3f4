"""Text pairs: sample candidate pairs (`llmst pairs sample`), score them with teachers, distill bi-encoders.

Pair record (JSONL): `id, text_a, text_b`, plus `score` and `scores: {teacher: value}` once scored, and `label`
for gold pairs. Sampled pairs also say how they were found (`sampler`, `sampler_rank`, `sampler_score`).
"""
