"""The backends the parity suite runs; every one must match plain pandas.

A new backend joins the suite by adding its registered name here.
"""

PARITY_BACKENDS = ["pandas", "pandas-codegen", "bodo", "bodo-native"]
