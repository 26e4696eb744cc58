"""Scoring runs and comparing systems, with trec_eval's semantics.

- measures.py: measure names (ir_measures syntax) and how each maps onto pytrec_eval
- evaluate.py: a run scored against qrels (-M, -c, -l semantics); runs.py and trec.py read
  and write runs and qrels (parquet or TREC files) in the project's ranking order
- significance.py: paired tests over queries and over seeds; report.py: the final report
- evaluate_model.py: any model on any collection, through the pipeline's own stages
"""
