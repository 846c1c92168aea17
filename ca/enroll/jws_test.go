package enroll

import (
	"encoding/base64"
	"errors"
	"strings"
	"testing"
)

func b64(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }

// TestParseJWSForm: the parser's refusals of form, each alone.
func TestParseJWSForm(t *testing.T) {
	const x5c = `"x5c":["AAEC"]`
	ok := b64(`{"alg":"RS256",`+x5c+`}`) + "." + b64(`{}`) + "." + b64("sig")
	if _, err := parseJWS(ok); err != nil {
		t.Fatalf("well-formed: %v", err)
	}
	for name, s := range map[string]string{
		"two parts":            b64(`{"alg":"RS256",`+x5c+`}`) + "." + b64(`{}`),
		"four parts":           ok + ".x",
		"padding":              b64(`{"alg":"RS256",`+x5c+`}`) + "=." + b64(`{}`) + "." + b64("sig"),
		"line break":           b64(`{"alg":"RS256",`+x5c+`}`) + "\n." + b64(`{}`) + "." + b64("sig"),
		"standard alphabet":    strings.ReplaceAll(b64(`{"alg":"RS256","x5c":["AAEC"],"z":">>>"}`), "-", "+") + "." + b64(`{}`) + "." + b64("sig"),
		"empty signature":      b64(`{"alg":"RS256",`+x5c+`}`) + "." + b64(`{}`) + ".",
		"header not an object": b64(`["alg"]`) + "." + b64(`{}`) + "." + b64("sig"),
		"header trailing data": b64(`{"alg":"RS256",`+x5c+`}{}`) + "." + b64(`{}`) + "." + b64("sig"),
		"header not UTF-8":     b64("{\"alg\":\"RS256\","+x5c+",\"x\":\"\xff\"}") + "." + b64(`{}`) + "." + b64("sig"),
		"escaped duplicate":    b64(`{"alg":"RS256","al\u0067":"none",`+x5c+`}`) + "." + b64(`{}`) + "." + b64("sig"),
		"alg not a string":     b64(`{"alg":1,`+x5c+`}`) + "." + b64(`{}`) + "." + b64("sig"),
		"alg lower case":       b64(`{"alg":"rs256",`+x5c+`}`) + "." + b64(`{}`) + "." + b64("sig"),
		"x5c base64url":        b64(`{"alg":"RS256","x5c":["-_-_"]}`) + "." + b64(`{}`) + "." + b64("sig"),
		"x5c unpadded":         b64(`{"alg":"RS256","x5c":["AAE"]}`) + "." + b64(`{}`) + "." + b64("sig"),
		"x5c empty string":     b64(`{"alg":"RS256","x5c":[""]}`) + "." + b64(`{}`) + "." + b64("sig"),
		"x5c not an array":     b64(`{"alg":"RS256","x5c":"AAEC"}`) + "." + b64(`{}`) + "." + b64("sig"),
		"x5u":                  b64(`{"alg":"RS256",`+x5c+`,"x5u":"https://x"}`) + "." + b64(`{}`) + "." + b64("sig"),
		"b64":                  b64(`{"alg":"RS256",`+x5c+`,"b64":false}`) + "." + b64(`{}`) + "." + b64("sig"),
		"too long":             strings.Repeat("A", maxProofLen+1),
	} {
		if _, err := parseJWS(s); !errors.Is(err, errProofInvalid) {
			t.Errorf("%s: err = %v, want errProofInvalid", name, err)
		}
	}
}

// TestParseClaimsForm: each claim's form, alone.
func TestParseClaimsForm(t *testing.T) {
	n32 := `"` + b64(strings.Repeat("n", 32)) + `"`
	h32 := `"` + b64(strings.Repeat("h", 32)) + `"`
	claims := func(nonce, aud, iat, exp, csr string) string {
		var parts []string
		for _, kv := range [][2]string{{"nonce", nonce}, {"aud", aud}, {"iat", iat}, {"exp", exp}, {"csr_sha256", csr}} {
			if kv[1] != "" {
				parts = append(parts, `"`+kv[0]+`":`+kv[1])
			}
		}
		return "{" + strings.Join(parts, ",") + "}"
	}
	good := claims(n32, `"https://x/v1/enroll"`, "1700000000", "1700000060", h32)
	c, err := parseClaims([]byte(good))
	if err != nil || c.iat != 1700000000 || c.exp != 1700000060 || c.aud != "https://x/v1/enroll" {
		t.Fatalf("good claims: %+v, %v", c, err)
	}
	if _, err := parseClaims([]byte(strings.TrimSuffix(good, "}") + `,"sub":"ignored"}`)); err != nil {
		t.Fatalf("an unknown claim: %v", err)
	}
	for name, s := range map[string]string{
		"no nonce":         claims("", `"a"`, "1", "2", h32),
		"short nonce":      claims(`"`+b64("short")+`"`, `"a"`, "1", "2", h32),
		"nonce padded":     claims(`"`+base64.URLEncoding.EncodeToString([]byte(strings.Repeat("n", 32)))+`"`, `"a"`, "1", "2", h32),
		"aud array":        claims(n32, `["a"]`, "1", "2", h32),
		"no aud":           claims(n32, "", "1", "2", h32),
		"iat string":       claims(n32, `"a"`, `"1"`, "2", h32),
		"iat fraction":     claims(n32, `"a"`, "1.5", "2", h32),
		"iat exponent":     claims(n32, `"a"`, "1e9", "2", h32),
		"iat negative":     claims(n32, `"a"`, "-1", "2", h32),
		"exp huge":         claims(n32, `"a"`, "1", "99999999999999999999", h32),
		"no exp":           claims(n32, `"a"`, "1", "", h32),
		"csr hash short":   claims(n32, `"a"`, "1", "2", `"`+b64("x")+`"`),
		"duplicate nonce":  strings.TrimSuffix(good, "}") + `,"nonce":` + n32 + "}",
		"not an object":    `[1]`,
		"trailing garbage": good + "x",
	} {
		if _, err := parseClaims([]byte(s)); !errors.Is(err, errProofInvalid) {
			t.Errorf("%s: err = %v, want errProofInvalid", name, err)
		}
	}
}
