package admin

import (
	"net/http"
	"strings"
	"time"
)

// The admin API of this node's OCSP pre-signer: how far its cache is signed.
const pathOCSPStatus = "/v1/ocsp/status"

// OCSPStatus is the state of a node's pre-signed OCSP cache, from its metrics.
type OCSPStatus struct {
	Node string `json:"node"`
	// Cached is the number of signed responses held (one per serial and CertID hash).
	Cached float64 `json:"cached_responses"`
	// Backlog is the responses due for re-signing at the last scan.
	Backlog float64 `json:"refresh_backlog"`
	// OldestAge is the age of the oldest cached response, in seconds.
	OldestAge float64 `json:"oldest_response_age_seconds"`
	// Signed counts signatures by why (change, refresh, fill…); SignErrors failures.
	Signed     map[string]float64 `json:"signed"`
	SignErrors float64            `json:"sign_errors"`
	// Requests counts answered requests by result.
	Requests map[string]float64 `json:"requests"`
	Time     time.Time          `json:"time"`
}

func (api *API) adminOCSPStatus(w http.ResponseWriter, _ *http.Request) {
	mfs, err := api.cfg.Metrics.Gather()
	if err != nil {
		writeError(w, err)
		return
	}
	st := OCSPStatus{Node: api.c.ID(), Signed: map[string]float64{}, Requests: map[string]float64{}, Time: time.Now().UTC()}
	for _, mf := range mfs {
		if !strings.HasPrefix(mf.GetName(), "inkan_ocsp_") {
			continue
		}
		for _, m := range mf.GetMetric() {
			label := ""
			if len(m.GetLabel()) > 0 {
				label = m.GetLabel()[0].GetValue()
			}
			v := m.GetGauge().GetValue() + m.GetCounter().GetValue()
			switch mf.GetName() {
			case "inkan_ocsp_cached_responses":
				st.Cached = v
			case "inkan_ocsp_refresh_backlog":
				st.Backlog = v
			case "inkan_ocsp_oldest_response_age_seconds":
				st.OldestAge = v
			case "inkan_ocsp_sign_errors_total":
				st.SignErrors = v
			case "inkan_ocsp_signed_total":
				st.Signed[label] = v
			case "inkan_ocsp_requests_total":
				st.Requests[label] = v
			}
		}
	}
	writeJSON(w, http.StatusOK, st)
}

// ocspStatusRoute reads this node's state: what an auditor or admin reads
// from metrics.
var ocspStatusRoute = routeAccess{action: actMetricsRead, local: true}
