// Package testenv holds the two things the tests of several packages share:
// a context bounded for one test, and a logger for the code under test that
// is silent unless INKAN_TEST_LOG is set (then it writes debug lines to
// stderr). It is for tests only.
package testenv
