"""Model verification (issue 18): accuracy of the manifest's models on a dataset, and the report that puts
accuracy, file size and latency side by side.

- dataset.py: COCO folders and class/image folders, validated up front (DatasetError says what to fix).
- detection.py: a detector over a COCO folder, scored by faster-coco-eval (never hand-written mAP).
- retrieval.py: an embedder's leave-one-out recall@1/5 by cosine nearest neighbour.
- latency.py, charts.py, report.py: the report's latency columns, its PNG charts and its HTML page.

Nothing here runs on a device: the evaluator and matplotlib are the optional `models` extra.
"""
