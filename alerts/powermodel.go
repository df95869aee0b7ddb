package alerts

import "github.com/megawatch/megawatch/internal/powermodel"

// lookupNodeType and nodeTypeNames adapt internal/powermodel (the node
// types shared with the collector's model source).
func lookupNodeType(name string) (hostW, perGPUW float64, ok bool) {
	t, ok := powermodel.Lookup(name)
	return t.HostW, t.PerGPUW, ok
}

func nodeTypeNames() []string { return powermodel.Names() }
