"""MACs of medical files through the HSM port: X9.19 under the counterparty's file key (DESIGN
§3.6, §4). Not pure (it awaits the HSM); the framing it seals is `ledger.medical.recordfile`."""

from __future__ import annotations

from hsm.interface import Hsm, MacAlgorithm
from hsm.keys import KeyRef
from ledger.medical.recordfile import Framed, MedicalFileError, mac_line


async def seal(hsm: Hsm, file_key: KeyRef, body: bytes) -> bytes:
    """`body` (from `recordfile.build`) with its MAC line appended."""
    mac = await hsm.generate_mac(file_key, MacAlgorithm.X9_19, body)
    return body + mac_line(mac)


async def verify(hsm: Hsm, file_key: KeyRef, framed: Framed) -> None:
    """Refuse the whole file when its MAC does not verify."""
    if not await hsm.verify_mac(file_key, MacAlgorithm.X9_19, framed.mac_input, framed.mac):
        raise MedicalFileError("the file's MAC does not verify under the file key")
