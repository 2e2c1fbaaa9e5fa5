"""MoME's shipped trained parts (`zoo train mome --recipe tiny --set ship=true`)."""
