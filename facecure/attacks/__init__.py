"""Attacks: the protections a user applies before posting pictures (Fawkes, ...)."""
from facecure.attacks.base import Attack, NoAttack, ProvidedAttack
from facecure.attacks.fawkes import FAWKES_V10_MODES, FawkesV10
from facecure.attacks.store import PerturbedStore

__all__ = ["FAWKES_V10_MODES", "Attack", "FawkesV10", "NoAttack", "PerturbedStore", "ProvidedAttack"]
