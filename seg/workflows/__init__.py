"""Workflows that string the library's steps together: k-fold cross-validation, the post-processing
chosen on it, ``seg auto`` (plan -> CV -> post-processing -> ensemble bundle -> report) and the demo.

They sit above ``engine``, ``inference`` and ``export_onnx`` and import them; nothing below imports
a workflow.
"""
