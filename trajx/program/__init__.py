"""Model programs: a user's own model as data, exported on their machine, run by the service.

A program is one JSON document (`trajx.program.document`): the model's `torch.export`
graphs in train and eval mode (ATen operators, no Python code, no pickle), its example
input, its task, and its small constant tensors; its weights travel separately as a
safetensors checkpoint. `document` checks a program without torch (the API does, on
upload); `build` exports one from a module and rebuilds a trainable module from one
(`module.ProgramModule`), checking it again before anything is deserialized.
"""
