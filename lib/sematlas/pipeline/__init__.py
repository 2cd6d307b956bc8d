"""The stage registry (notebook, dependencies, inputs, outputs) and the command line that runs stages
through papermill.
"""
