"""Builders ("chambers"): one small module per construction, each with its proof.

Every chamber returns craft blocks whose directions are named after program nodes;
the compiler places them into layers and the assembler into weight matrices.
"""
