"""Attacks: the protections a user applies before posting pictures (Fawkes, ...)."""
from facecure.attacks.base import Attack, NoAttack, ProvidedAttack
from facecure.attacks.fawkes import FAWKES_V10_MODES, FawkesV10
from facecure.attacks.fawkes_cli import FawkesCLI, FawkesNotInstalled
from facecure.attacks.fawkes_v03 import FAWKES_V03_MODES, FawkesV03
from facecure.attacks.from_dir import FromDir
from facecure.attacks.lowkey import LowKey, lpips_distance
from facecure.attacks.mixed import MixedAttack
from facecure.attacks.noise import RandomNoise
from facecure.attacks.opom import OPOM
from facecure.attacks.pgd import PGD
from facecure.attacks.store import PerturbedStore

__all__ = ["FAWKES_V03_MODES", "FAWKES_V10_MODES", "Attack", "FawkesCLI", "FawkesNotInstalled",
           "FawkesV03", "FawkesV10", "FromDir", "LowKey", "MixedAttack", "NoAttack", "OPOM", "PGD",
           "PerturbedStore", "ProvidedAttack", "RandomNoise", "lpips_distance"]
