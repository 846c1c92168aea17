package admin

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"net/http"
	"time"

	"go.etcd.io/bbolt"

	"github.com/inkan-pki/inkan/ca/policy"
	"github.com/inkan-pki/inkan/policies"
)

// The admin API of the profiles in replicated state.
const (
	pathPolicies    = "/v1/policies"
	pathPolicyDiff  = "/v1/policies/diff"
	pathPolicyApply = "/v1/policies/apply"
)

// ProfileInfo is the active version of a profile.
type ProfileInfo struct {
	Name    string    `json:"name"`
	Version uint64    `json:"version"`
	Kind    string    `json:"kind"`
	File    string    `json:"file"`
	SHA256  string    `json:"sha256"`
	Actor   string    `json:"actor"`
	At      time.Time `json:"applied_at"`
	Data    string    `json:"data,omitempty"` // the file, in `policy show`
}

// PolicyFile is a candidate profile file: its name (for messages) and text.
type PolicyFile struct {
	File string `json:"file"`
	Data string `json:"data"`
}

// PolicyDiff is how a candidate differs from the active version.
type PolicyDiff struct {
	Diff string `json:"diff"`
}

var (
	probProfileUnknown = problemType{"profile-unknown", http.StatusNotFound, "No such profile"}
	probPolicyInvalid  = problemType{"policy-invalid", http.StatusUnprocessableEntity, "The profile file is not valid"}
)

func (api *API) adminPolicyHandlers(handle func(string, routeAccess, http.HandlerFunc)) {
	read := routeAccess{action: actConfigRead}
	handle("GET "+pathPolicies, read, api.adminPolicies)
	handle("GET "+pathPolicies+"/{name}", read, api.adminPolicy)
	handle("POST "+pathPolicyDiff, routeAccess{action: actConfigRead, body: newBody[PolicyFile]}, api.adminPolicyDiff)
	handle("POST "+pathPolicyApply, routeAccess{action: actPolicyApply, dual: true, body: newBody[PolicyFile]}, api.adminPolicyApply)
}

func profileInfo(v policy.Version, withData bool) ProfileInfo {
	sum := sha256.Sum256(v.Data)
	info := ProfileInfo{Name: v.Profile.Name, Version: v.Profile.Version, Kind: string(v.Profile.Kind), File: v.File,
		SHA256: hex.EncodeToString(sum[:]), Actor: v.Actor, At: v.At}
	if withData {
		info.Data = string(v.Data)
	}
	return info
}

func (api *API) adminPolicies(w http.ResponseWriter, _ *http.Request) {
	out := []ProfileInfo{}
	err := api.c.View(func(tx *bbolt.Tx) error {
		names, err := policy.Read(tx).Names()
		for _, name := range names {
			v, err := policy.Read(tx).Lookup(name)
			if err != nil {
				return err
			}
			out = append(out, profileInfo(v, false))
		}
		return err
	})
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, out)
}

func (api *API) adminPolicy(w http.ResponseWriter, r *http.Request) {
	v, err := viewValue(api.c, func(tx *bbolt.Tx) (policy.Version, error) { return policy.Read(tx).Lookup(r.PathValue("name")) })
	if err != nil {
		writePolicyError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, profileInfo(v, true))
}

func (api *API) adminPolicyDiff(w http.ResponseWriter, r *http.Request) {
	req := bodyOf[PolicyFile](r)
	if !checkPolicyFile(w, req) {
		return
	}
	d, err := viewValue(api.c, func(tx *bbolt.Tx) (string, error) { return policy.Read(tx).Diff(req.File, []byte(req.Data)) })
	if err != nil {
		writePolicyError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, PolicyDiff{Diff: d})
}

func (api *API) adminPolicyApply(w http.ResponseWriter, r *http.Request) {
	req := bodyOf[PolicyFile](r)
	if !checkPolicyFile(w, req) {
		return
	}
	cmd, err := policy.ApplyCommand(req.File, []byte(req.Data), api.actorOf(r))
	if err != nil {
		writePolicyError(w, err)
		return
	}
	c := api.c
	if _, err := c.Submit(r.Context(), cmd); err != nil {
		writePolicyError(w, err)
		return
	}
	var v policy.Version
	p, err := policies.Parse(req.File, []byte(req.Data))
	if err == nil {
		err = c.ViewCurrent(r.Context(), func(tx *bbolt.Tx) error { v, err = policy.Read(tx).Lookup(p.Name); return err })
	}
	if err != nil {
		writePolicyError(w, err)
		return
	}
	api.log.Info("admin: profile applied", "profile", p.Name, "version", p.Version)
	writeJSON(w, http.StatusOK, profileInfo(v, false))
}

func checkPolicyFile(w http.ResponseWriter, req *PolicyFile) bool {
	if req.File == "" || req.Data == "" {
		writeProblem(w, probRequestInvalid, "file and data: required")
		return false
	}
	return true
}

// writePolicyError maps the policy store's refusals: a file that does not
// check (its message names the line and field) or a version that does not go
// up is the operator's to fix.
func writePolicyError(w http.ResponseWriter, err error) {
	switch {
	case errors.Is(err, policy.ErrNoProfiles), errors.Is(err, policy.ErrNotFound):
		writeProblem(w, probProfileUnknown, err.Error())
	case errors.Is(err, policies.ErrInvalid), errors.Is(err, policy.ErrVersion):
		writeProblem(w, probPolicyInvalid, err.Error())
	default:
		writeError(w, err)
	}
}
