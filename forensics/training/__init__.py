"""The torch side of gscan: training, evaluation of checkpoints, export and exact Grad-CAM.

Imported only by the commands that need it; scanning never imports this package.
"""
