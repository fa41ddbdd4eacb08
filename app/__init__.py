"""The composition root: the ``musicrec`` command, which wires the parts together.

One module per group of verbs: ``data_commands`` (generate), ``training_commands`` (train,
evaluate, recommend), ``export_commands`` (export), ``serve_commands`` (triton, demo) and
``deploy_commands`` (deploy, rollback, status); ``main`` builds the parser and turns user
errors into one-line messages.

May import: every other package. Nothing imports it (import-linter checks it in CI).
"""

import os

# TensorFlow's start-up banner (absl's "before InitializeLog" line and the oneDNN notice, twice:
# TensorFlow loads two libraries) went to stderr on every command that imports it. Both must be
# set before TensorFlow is imported; TF_CPP_MIN_LOG_LEVEL alone does not hide the oneDNN notice.
# Without oneDNN's custom operations results are the same up to float round-off. An operator
# who sets either variable keeps their own value.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
