package cluster

import (
	"github.com/hashicorp/raft"
	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	applied       prometheus.Gauge
	applyErrors   *prometheus.CounterVec
	commitLatency prometheus.Histogram
	batchSize     prometheus.Histogram
}

func newMetrics() *metrics {
	return &metrics{
		applied: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "inkan_cluster_applied_index", Help: "Raft index of the last entry applied to the local state.",
		}),
		applyErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "inkan_cluster_apply_errors_total", Help: "Commands not applied: refused (a result) or fatal (the node stopped).",
		}, []string{"kind"}),
		commitLatency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "inkan_cluster_commit_seconds", Help: "Time from Submit to the command applied on the submitting node.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
		}),
		batchSize: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "inkan_cluster_batch_commands", Help: "Commands per Raft entry made by the leader.",
			Buckets: prometheus.ExponentialBuckets(1, 2, 10),
		}),
	}
}

func (m *metrics) register(r prometheus.Registerer, c *Cluster) error {
	state := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "inkan_cluster_raft_state", Help: "Raft state: 0 follower, 1 candidate, 2 leader, 3 shutdown.",
	}, func() float64 {
		switch c.raft.State() {
		case raft.Follower:
			return 0
		case raft.Candidate:
			return 1
		case raft.Leader:
			return 2
		}
		return 3
	})
	for _, col := range []prometheus.Collector{m.applied, m.applyErrors, m.commitLatency, m.batchSize, state} {
		if err := r.Register(col); err != nil {
			return err
		}
	}
	return nil
}
