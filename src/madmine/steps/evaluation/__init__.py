"""Measuring progress (step 6 of the method, docs/paper.md): unbiased test sets T(R), the model table
(the paper's Table 1), the ranking stability of a test set (Fig. 7), MAD competitions between
two models (Table 2) and the quality of each selection strategy as a failure detector.

`sources` reads what other steps wrote, `predictions` gets any model version's map of any
image, and each other module is one of the measurements above.
"""
