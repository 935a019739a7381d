"""The prefixes of vprompt's own kinds of backbone name, in one light module: the prompt-file
checks read them without importing torch or timm."""

ZOO_PREFIX = "zoo:"
"""Names a model of the offline zoo (``vprompt.zoo``)."""
ROBUSTBENCH_PREFIX = "robustbench:"
"""Names a RobustBench ImageNet model by its timm architecture (``robustbench:THREAT/MODEL``)."""
TRANSFORMERS_PREFIX = "hf-transformers:"
"""Names a Hugging Face transformers vision backbone (see ``vprompt.families.hf_transformers``)."""
MODULE_PREFIX = "module:"
"""Names a backbone built by the user's own code: ``module:PACKAGE.CLASS``, recorded, never rebuilt."""
BACKBONE_PREFIXES = (ZOO_PREFIX, ROBUSTBENCH_PREFIX, TRANSFORMERS_PREFIX, MODULE_PREFIX)
