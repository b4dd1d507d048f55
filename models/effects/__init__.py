"""Effect estimators (scikit-learn, econml): propensities, cross-fitting, ATE and CATE
learners, overlap and balance diagnostics. Never imports torch."""
