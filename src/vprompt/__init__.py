"""vprompt: visual prompting for frozen vision models.

The public API in one import:

```python
import vprompt
model = vprompt.create_model("vit_base_patch16_224", "vpt-deep", num_classes=10)
vprompt.save_prompt(model, "my-prompt")
model = vprompt.load_prompt("my-prompt")
```
"""

from vprompt.backbones import BackboneSpec
from vprompt.errors import VpromptError
from vprompt.methods import method_names
from vprompt.model import PromptedModel, count_parameters, create_model, load_prompt, parameter_report, save_prompt
from vprompt.predict import predict
from vprompt.train import TrainConfig, train
from vprompt.version import VERSION

__version__ = VERSION

__all__ = [
    "BackboneSpec",
    "PromptedModel",
    "TrainConfig",
    "VpromptError",
    "count_parameters",
    "create_model",
    "load_prompt",
    "method_names",
    "parameter_report",
    "predict",
    "save_prompt",
    "train",
]
