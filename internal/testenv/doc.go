// Package testenv holds what the tests of several packages share: a context
// bounded for one test; a logger for the code under test that is silent
// unless INKAN_TEST_LOG is set (then it writes debug lines to stderr); and
// Tool, which finds an outside command a test runs (openssl, nginx, GnuTLS's
// tools…), failing the test in CI and skipping it elsewhere when the command
// is missing. It is for tests only, and not for audit's, which import nothing
// of inkan's but certserial.
package testenv
