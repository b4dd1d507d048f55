"""Evaluation of effect estimates: RATE (AUTOC, Qini), BLP calibration and GATES, method
comparisons, known-truth checks and their figures."""
