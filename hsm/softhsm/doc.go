// Package softhsm gives each test its own SoftHSM2 token, so that inkan's tests run
// against a real PKCS#11 module and never a fake. SoftHSM reads SOFTHSM2_CONF once
// when the module is initialised, so the package keeps one token directory and
// config per process (set before the module is first loaded; every test of a
// package shares it) and makes a fresh, initialised token per call through
// PKCS#11 itself (C_InitToken, C_InitPIN), with random PINs in 0600 files. The
// directory is removed when the process's last token is closed, and directories
// left by test processes that died are swept on first use. Use it only from tests,
// examples and demos.
package softhsm
