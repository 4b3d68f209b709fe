"""Triton model repositories: write a version's directory completely before Triton loads it."""

from control_plane.modelrepo.base import ModelRepository, RepositoryFile
from control_plane.modelrepo.factory import build_model_repository, parse_s3_repository
from control_plane.modelrepo.folder import FolderModelRepository
from control_plane.modelrepo.s3 import S3ModelRepository

__all__ = [
    "FolderModelRepository",
    "ModelRepository",
    "RepositoryFile",
    "S3ModelRepository",
    "build_model_repository",
    "parse_s3_repository",
]
