package alerts

import "slices"

// lookupNodeType and nodeTypeNames adapt internal/powermodel (Lookup,
// Names). Until that package is on main they use the same published
// figures (DGX H100/H200 10.2 kW max with 8 × 700 W GPUs, DGX B200 14.3 kW
// with 8 × 1000 W; 1.5 kW static host power, the rest per GPU).
func lookupNodeType(name string) (hostW, perGPUW float64, ok bool) {
	t, ok := standInNodeTypes[name]
	return t[0], t[1], ok
}

func nodeTypeNames() []string {
	n := make([]string, 0, len(standInNodeTypes))
	for k := range standInNodeTypes {
		n = append(n, k)
	}
	slices.Sort(n)
	return n
}

var standInNodeTypes = map[string][2]float64{
	"dgxh100": {1500, 387.5},
	"dgxh200": {1500, 387.5},
	"dgxb200": {1500, 600},
}
