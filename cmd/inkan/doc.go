// Command inkan is the one binary of the inkan appliance: the server, the admin and
// audit clients, the enrollment client and the development helpers. It holds cobra
// commands only; each command parses its flags and hands over to the package that
// does the work.
package main
