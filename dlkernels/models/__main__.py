"""python -m dlkernels.models: print the model table (which layers run dlkernels ops, which run torch's)."""
from dlkernels.models import print_model_table

print_model_table()
