"""The HSM: primitives (des, mac, padding, pinblock, pboc, signon, cardcrypto), keys (keys, lmk,
keyblock, keystore, keycache), the port (`interface.Hsm`), the software HSM (`soft.SoftHsm`) and
the network host-command codec (hostcmd). Pure: no IO, clock or logging (DESIGN §2)."""
