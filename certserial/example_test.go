package certserial_test

import (
	"fmt"

	"github.com/inkan-pki/inkan/certserial"
)

// A serial as openssl prints it, read and printed in inkan's one form.
func Example() {
	n, err := certserial.Parse("0D:0A:59:08:F1") // openssl x509 -text
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(certserial.Format(n))

	_, err = certserial.Parse("0d0g")
	fmt.Println("--rebind", err)
	// Output:
	// 0d0a5908f1
	// --rebind "0d0g": not a certificate serial number: 'g' is not a hex digit
}
