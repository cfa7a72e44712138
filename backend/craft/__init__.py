"""The craft IR: named basis directions, vector spaces, linear/bilinear maps and blocks.

A block (MLP or attention head) acts on vectors expressed in named basis directions;
the assembler later places every direction at a fixed residual-stream index.
"""
